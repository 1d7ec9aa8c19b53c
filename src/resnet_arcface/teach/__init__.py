"""What the book needs beyond the network: figures (:mod:`.viz`), model summaries (:mod:`.summary`), the
self-checks (:mod:`.checks`, :mod:`.exercises`) and the coursework tools (:mod:`.coursework`).

Its dependencies (matplotlib, torchinfo, nbclient, ...) come with the ``book`` extra:
``pip install "resnet-arcface[book]"``. Import the submodules you need, e.g.
``from resnet_arcface.teach import viz``.
"""
