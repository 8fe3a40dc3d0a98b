"""The fixed classifier (Hoffer, Hubara & Soudry 2018, "Fix your classifier"): a fixed
orthogonal or Hadamard last layer with a learned scale. Ledger rows H*;
``lastlayer reproduce fixed-classifier``."""
