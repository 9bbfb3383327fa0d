"""UnSTAR: unlearning with self-taught anti-sample reasoning."""
