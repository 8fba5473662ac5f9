"""edgerec.release: publish bundle versions to devices through a TUF repository.

Cloud side (the ``coordinator`` extra installs python-tuf): ``edgerec release
init | publish | rollout | pause | resume | rollback | refresh | status``. The device
side is :mod:`edgerec.runtime.update`; both read the channel document of
:mod:`edgerec.ota`. See ``docs/ota-updates.md``.
"""

from .repository import EXPIRY_DAYS, PublishResult, ReleaseRepository, RepositoryError

__all__ = ["EXPIRY_DAYS", "PublishResult", "ReleaseRepository", "RepositoryError"]
