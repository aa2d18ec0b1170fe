"""data at rest: citizens' phone numbers encrypted, a keyed hash beside each, sealed free text

Widens the phone columns for their tokens, adds the hash columns, encrypts every number already
there and seals the dialogue states, kept answers and outbox messages that carry one (and every
outbox attachment: a chart, or an exported form full of numbers), with the key of
the environment at migration time (DATA_KEY, or the one bot.cli configured from the settings;
without one, the public development key). The service objects' uniqueness moves to the hash.
On SQLite, secure_delete is on while the rows are rewritten, so the clear numbers do not linger in
freed pages (the bot checkpoints the WAL after migrating: storage.db.upgrade). Downgrade decrypts.

The tables and columns are listed here as they were at this revision, not taken from the models.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel

from storage import crypto, rekey
from storage.crypto import PhoneColumn, SealedColumn

revision: str = '0018'
down_revision: Union[str, None] = '0017'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

PHONES = (PhoneColumn("household", "phone", "phone_hash"), PhoneColumn("serviceobject", "phone", "phone_hash"),
          PhoneColumn("problem", "raiser_phone", "raiser_phone_hash"), PhoneColumn("rating", "phone", "phone_hash"),
          PhoneColumn("callback_task", "phone", "phone_hash"))
SEALED = (SealedColumn("dialogue_state", "data", "json"), SealedColumn("processed_inbound", "answer", "json"),
          SealedColumn("outbox", "body", "text"), SealedColumn("outbox", "payload", "json"),
          SealedColumn("outbox_attachment", "content", "bytes"))
NULLABLE = {"problem": True, "rating": True}


def _secure_delete(on: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"PRAGMA secure_delete = {'ON' if on else 'OFF'}")


def upgrade() -> None:
    _secure_delete(True)
    for spec in PHONES:
        with op.batch_alter_table(spec.table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(spec.hash_column, sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
            batch_op.alter_column(spec.column, existing_type=sqlmodel.sql.sqltypes.AutoString(length=30),
                                  type_=sqlmodel.sql.sqltypes.AutoString(length=128),
                                  existing_nullable=NULLABLE.get(spec.table, False))
            if spec.table == "serviceobject":
                batch_op.drop_constraint('uq_service_object_unit_name_phone', type_='unique')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('body', existing_type=sqlmodel.sql.sqltypes.AutoString(length=4096), type_=sa.Text(),
                              existing_nullable=False)
    rekey.reencrypt(op.get_bind(), crypto.keyring(), phone_columns=PHONES, sealed_columns=SEALED, seal_clear=True)
    with op.batch_alter_table('serviceobject', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_service_object_unit_name_phone_hash', ['unit_id', 'name', 'phone_hash'])
    _secure_delete(False)


def downgrade() -> None:
    with op.batch_alter_table('serviceobject', schema=None) as batch_op:
        batch_op.drop_constraint('uq_service_object_unit_name_phone_hash', type_='unique')
    rekey.decrypt_all(op.get_bind(), crypto.keyring(), PHONES, SEALED)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('body', existing_type=sa.Text(), type_=sqlmodel.sql.sqltypes.AutoString(length=4096),
                              existing_nullable=False)
    for spec in reversed(PHONES):
        with op.batch_alter_table(spec.table, schema=None) as batch_op:
            batch_op.alter_column(spec.column, existing_type=sqlmodel.sql.sqltypes.AutoString(length=128),
                                  type_=sqlmodel.sql.sqltypes.AutoString(length=30),
                                  existing_nullable=NULLABLE.get(spec.table, False))
            batch_op.drop_column(spec.hash_column)
            if spec.table == "serviceobject":
                batch_op.create_unique_constraint('uq_service_object_unit_name_phone', ['unit_id', 'name', 'phone'])
