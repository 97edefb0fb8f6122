"""rnngen: train character-level and MIDI recurrent networks, and sample from them."""

import warnings

# torch warns on import when NumPy is absent; rnngen never needs NumPy, so the warning is noise.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

__version__ = "0.1.0"
