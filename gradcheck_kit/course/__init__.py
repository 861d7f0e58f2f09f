"""The backprop exercises: what each asks for, how it is run, and how its answer is graded."""
