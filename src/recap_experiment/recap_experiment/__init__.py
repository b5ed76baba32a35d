"""The RECAP experiment in simulation: evaluation on held-out seeds, pooling of evaluations, the
whole pipeline (Algorithm 1) with its report, and the scripted operator's own evaluation."""
