"""From sweep directories to comparison tables, plots and the report notebook."""
