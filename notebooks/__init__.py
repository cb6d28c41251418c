"""The curated notebooks, shipped in the wheel as labkit.notebooks so `labkit tour` and `labkit notebooks`
find them in an installed labkit too. The .ipynb files are the notebooks; each paired .py is their jupytext
text form, for diffs and review, not a module to import."""
