"""LEVER for XReg (Prabhu et al., WSDM 2020): a third-party adapter distribution (``lever-xreg``).

XReg is a C++ command-line trainer whose licence forbids bundling it: the user points ``--upstream``
at its sources, the adapter builds them once into a cache and trains on the blended soft targets,
which XReg regresses natively (``-w 1`` with its logistic-regression solvers).
"""

__version__ = "0.1.0"
