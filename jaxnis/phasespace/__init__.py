"""Maps from the unit hypercube to particle momenta, with exact weights and inverses."""
