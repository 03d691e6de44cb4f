"""What runs inside an emitted bundle's process (``python -m monai.bundle run``): the package's
own MONAI components (``components``: transforms, loss, weight loading), handlers
(``handlers``: evaluation report, checkpoint loading; ``checkpoint``: atomic best-model saving)
and training-list helpers (``data``). Nothing here is imported at emit time."""
