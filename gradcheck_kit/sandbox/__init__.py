"""Run a student's code in a worker process, guarded against autograd, and bring its values back."""
