"""UnSTAR: unlearning with self-taught anti-sample reasoning (arXiv 2410.17050)."""
