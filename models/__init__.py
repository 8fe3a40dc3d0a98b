"""lastlayer's models: the papers' procedures, the claims ledger and the command line."""
