"""LEVER for ELIAS: a third-party adapter distribution (``lever-elias``).

``lever wrap elias --upstream PATH`` writes the arm's data in ELIAS's own files (``Datasets/<ds>/``),
launches the user's ELIAS ``train.py`` then ``eval.py`` with the adapter's patches active, and reads
ELIAS's test score matrix back. Nothing of ELIAS is shipped here (its repository has no licence):
only the names and signatures it patches, and sha256 fingerprints of the tested commit's files.
"""

__version__ = "0.1.0"
