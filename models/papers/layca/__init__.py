"""Layca and layer rotation (Carbonnelle & De Vleeschouwer, "On layer-level control of DNN
training and its impact on generalization"). Ledger rows C*; ``lastlayer reproduce layca``."""
