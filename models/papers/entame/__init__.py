"""ENTAME (Varno et al. 2019, "Efficient Neural Task Adaptation by Maximum Entropy
Initialization"): a new classifier initialised for maximum entropy on z-normalised
features, fine-tuned with the pre-trained body. Ledger rows E*; ``lastlayer reproduce
entame``."""
