"""citizen evaluation: service windows and their cadres on duty, evaluation codes, ratings, call-back tasks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('service_window',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('unit_id', 'name', name='uq_service_window_unit_name')
    )
    with op.batch_alter_table('service_window', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_window_unit_id'), ['unit_id'], unique=False)

    op.create_table('evaluation_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_kind', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=True),
    sa.Column('window_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('issued_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['window_id'], ['service_window.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cadre_id', name='uq_evaluation_code_cadre'),
    sa.UniqueConstraint('window_id', name='uq_evaluation_code_window')
    )
    op.create_table('window_duty',
    sa.Column('window_id', sa.Integer(), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['window_id'], ['service_window.id'], ),
    sa.PrimaryKeyConstraint('window_id', 'cadre_id')
    )
    with op.batch_alter_table('window_duty', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_window_duty_cadre_id'), ['cadre_id'], unique=False)

    op.create_table('rating',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_id', sa.Integer(), nullable=False),
    sa.Column('target_kind', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('cadre_id', sa.Integer(), nullable=True),
    sa.Column('window_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=True),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('rater_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('address_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('rated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('rated_on', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('misuse', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('problem_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cadre_id'], ['cadre.id'], ),
    sa.ForeignKeyConstraint(['code_id'], ['evaluation_code.id'], ),
    sa.ForeignKeyConstraint(['problem_id'], ['problem.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.ForeignKeyConstraint(['window_id'], ['service_window.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code_id', 'rater_key', 'rated_on', name='uq_rating_rater_day')
    )
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_cadre_id'), ['cadre_id'], unique=False)
        batch_op.create_index('ix_rating_code_address_time', ['code_id', 'address_key', 'rated_at'], unique=False)
        batch_op.create_index('ix_rating_unit_time', ['unit_id', 'rated_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_window_id'), ['window_id'], unique=False)

    op.create_table('callback_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rating_id', sa.Integer(), nullable=False),
    sa.Column('problem_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('phone', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('due_on', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('done_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['problem_id'], ['problem.id'], ),
    sa.ForeignKeyConstraint(['rating_id'], ['rating.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('rating_id')
    )
    with op.batch_alter_table('callback_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_callback_task_problem_id'), ['problem_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_callback_task_unit_id'), ['unit_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('callback_task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_callback_task_unit_id'))
        batch_op.drop_index(batch_op.f('ix_callback_task_problem_id'))

    op.drop_table('callback_task')
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_window_id'))
        batch_op.drop_index('ix_rating_unit_time')
        batch_op.drop_index('ix_rating_code_address_time')
        batch_op.drop_index(batch_op.f('ix_rating_cadre_id'))

    op.drop_table('rating')
    with op.batch_alter_table('window_duty', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_window_duty_cadre_id'))

    op.drop_table('window_duty')
    op.drop_table('evaluation_code')
    with op.batch_alter_table('service_window', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_window_unit_id'))

    op.drop_table('service_window')
