"""The node agent: runs beside a dealership's database, reads it under the branch's policy
and data contract, trains locally with DP-SGD, and sends only encrypted updates.
Never imports `coordinator`."""
