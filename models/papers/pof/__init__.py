"""PoF (Sato et al., ICML 2022, "PoF: Post-Training of Feature Extractor for Improving
Generalization"): post-train the feature extractor against classifiers perturbed along
mini-batch gradients. Ledger rows P*; ``lastlayer reproduce pof``."""
