"""What both sides of the federation share: the forecasting model, the encrypted-update
codec and the wire schemas. Nothing in here reads branch data or holds a secret key."""
