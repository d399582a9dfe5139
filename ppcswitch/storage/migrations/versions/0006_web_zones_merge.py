"""One head again: the panel's time zones (0003_web_zones, from 0002_web) after 0005_intelligence.

No schema change; later migrations take this one as their parent.

Revision ID: 0006_web_zones_merge
Revises: 0005_intelligence, 0003_web_zones
"""

revision = "0006_web_zones_merge"
down_revision = ("0005_intelligence", "0003_web_zones")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
