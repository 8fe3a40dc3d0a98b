"""The exercise templates that ``lastlayer exercise start NAME`` copies for a learner to
fill in. They are plain source files read as text: nothing imports them (they raise
NotImplementedError until they are filled), and each imports only ``lastlayer.engine`` and
NumPy, so that a copy runs anywhere lastlayer is installed."""
