"""``edgerec bench``: on-device runtime benchmark (latency, throughput, load, memory).

The measurements themselves are TensorFlow-free and live in
:mod:`edgerec.bench.runtime_bench`; this package adds the command line
(:mod:`edgerec.bench.cli`), the run orchestration (:mod:`edgerec.bench.runner`)
and two helpers that *do* import TensorFlow and therefore always run in a
subprocess: the teacher timing (:mod:`edgerec.bench.teacher`) and the synthetic
bundles of the catalog-scaling curve (:mod:`edgerec.bench.synthetic`).
"""
