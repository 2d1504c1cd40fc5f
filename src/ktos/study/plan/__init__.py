"""The study's plan stage. Planning: the workflow's jobs and files, read at parse time (standard library only), and
the configuration's key reference."""
