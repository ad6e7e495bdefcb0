"""Privacy: the ledger of real-data accesses; (later) the DP-SGD engine and DP statistics."""
