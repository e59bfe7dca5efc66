"""A learned mask verifier: a small classifier of mask quality trained on annotators' decisions
(semi_merge outputs) and audits (pairs with expert masks), scoring masks so that people review only
the ones it cannot decide.

model.py (the network and its checkpoint), features.py (what it sees of a mask), score.py (scoring
and routing, used by the workers), data.py (labelled masks from outputs), train.py (steps, metrics).
"""
