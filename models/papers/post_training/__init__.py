"""Post-training (Moreau & Audiffren 2017, "Post training in deep learning"): retrain only
the last layer; for the squared loss its optimum is a closed-form (kernel) ridge solution.
Ledger rows M*; ``lastlayer reproduce post-training``."""
