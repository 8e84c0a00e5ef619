"""Capacity planning: load levels, Locust sweeps, Triton-side statistics, the plan, reports and plots.

What `tritonize bench`, `plan` and `deploy` import."""
