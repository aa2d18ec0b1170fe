"""好差评 by the national rules: 差评 handled by the 作风办, visits disputed by a spot-check and ruled on

Revision ID: 0011
Revises: 0006
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0011'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.add_column(sa.Column('to_office', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disputed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ruling', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column('ruled_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('ruled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_foreign_key('fk_spot_check_ruled_by', 'cadre', ['ruled_by_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('spot_check', schema=None) as batch_op:
        batch_op.drop_constraint('fk_spot_check_ruled_by', type_='foreignkey')
        batch_op.drop_column('ruled_at')
        batch_op.drop_column('ruled_by_id')
        batch_op.drop_column('ruling')
    with op.batch_alter_table('visit', schema=None) as batch_op:
        batch_op.drop_column('disputed_at')
    with op.batch_alter_table('problem', schema=None) as batch_op:
        batch_op.drop_column('to_office')
