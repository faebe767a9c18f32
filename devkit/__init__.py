"""The development kit: a local GitHub (``simulator``), a scripted model server (``scripted``)
and the whole stack wired on 127.0.0.1 (``stack``). Used by ``handoff demo``, the tests and
the benches; the product's modules never import it."""
