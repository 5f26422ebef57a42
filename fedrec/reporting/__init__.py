"""Presentation of run outputs: matplotlib plots and rich console tables, kept out of the
Flower-free core (:mod:`fedrec.core`), which only produces the data."""
