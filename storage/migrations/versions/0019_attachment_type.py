"""an outbox attachment's content type wide enough for an Excel workbook's

The XLSX type (application/vnd.openxmlformats-officedocument.spreadsheetml.sheet) has 65 characters:
on PostgreSQL a form sent as a file by WeCom failed to queue against VARCHAR(50).

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30
"""
from typing import Sequence, Union

from alembic import op
import sqlmodel


revision: str = '0019'
down_revision: Union[str, None] = '0018'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('outbox_attachment', schema=None) as batch_op:
        batch_op.alter_column('content_type', existing_type=sqlmodel.sql.sqltypes.AutoString(length=50),
                              type_=sqlmodel.sql.sqltypes.AutoString(length=255), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_attachment', schema=None) as batch_op:
        batch_op.alter_column('content_type', existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
                              type_=sqlmodel.sql.sqltypes.AutoString(length=50), existing_nullable=False)
