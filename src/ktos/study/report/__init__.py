"""The study's report stage. Report: the figures, the verdict's and the README's words, and the table files."""
