"""evidence of visits where supervisors look: why a visit was drawn for a spot-check (the draw is
weighted by evidence), and the index that counts a half-year's visits per cadre and evidence level

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0017'
down_revision: Union[str, None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.create_index('ix_visit_half_cadre_evidence', ['half', 'cadre_id', 'evidence'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_index('ix_visit_half_cadre_evidence')
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.drop_column('reason')
