"""What a trained last layer and its features say, measured, never fitted: neural collapse
(``neural_collapse``: NC1-NC4 and the CDNV of Papyan et al. 2020 and Galanti et al. 2022,
in memory or streamed in one pass of stable class statistics, on Dask too), the calibration
of its probabilities (``calibration``: NLL, Brier, ECE / MCE with equal-width and equal-mass
bins) and their temperature scaling (``temperature``: the exact 1-D minimisation of the
held-out NLL).
"""

from .calibration import (
    BINNINGS, CalibrationError, CalibrationWarning, ReliabilityBins, brier, ece, mce, nll,
)
from .neural_collapse import NeuralCollapse, neural_collapse
from .temperature import (
    Temperature, TemperatureProfile, apply_temperature, fit_temperature, temperature_profile,
)

__all__ = [
    "neural_collapse", "NeuralCollapse",
    "nll", "brier", "ece", "mce", "BINNINGS", "CalibrationError", "ReliabilityBins",
    "CalibrationWarning",
    "fit_temperature", "apply_temperature", "temperature_profile", "Temperature",
    "TemperatureProfile",
]
