"""The coordinator: orchestrates Flower rounds and sums encrypted updates it cannot read.
Never imports `node_agent`; holds only the alliance's public CKKS context."""
