"""The commands, one module each: ``arcface-train`` (:mod:`.train`), ``arcface-verify`` (:mod:`.verify`) and
``arcface-weights`` (:mod:`.weights`); :mod:`.common` holds what they share."""
