"""One head again: the portal's partner tasks (0011_portal_tasks) and the cluster's call order
(0011_cluster_calls) both followed 0010_breakdowns.

No schema change; later migrations take this one as their parent.

Revision ID: 0012_portal_cluster_merge
Revises: 0011_portal_tasks, 0011_cluster_calls
"""

revision = "0012_portal_cluster_merge"
down_revision = ("0011_portal_tasks", "0011_cluster_calls")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
