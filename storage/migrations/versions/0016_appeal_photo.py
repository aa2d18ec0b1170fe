"""an appeal's photo (申诉复核): the content hash naming the picture kept under MEDIA_DIR

Revision ID: 0016
Revises: 0009
Create Date: 2026-12-02
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0016'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('rating_appeal', schema=None) as batch_op:
        batch_op.add_column(sa.Column('photo_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rating_appeal', schema=None) as batch_op:
        batch_op.drop_column('photo_sha256')
