"""The study's readings stage. Readings: the tidy trajectory table and every statistic and table a study is judged
by."""
