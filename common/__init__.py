"""What both sides of the federation share: the forecasting model, the encrypted-update
codec, the wire schemas, and writing key files safely. Nothing in here reads branch data."""
