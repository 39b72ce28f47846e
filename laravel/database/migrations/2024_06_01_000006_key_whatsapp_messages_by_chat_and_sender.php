<?php

/**
 * `whatsapp_messages`: one row per (session_id, message_id, recipient, sender) instead of one per
 * (session_id, message_id), for applications that ran 2024_06_01_000002 while its unique index was
 * the latter. WhatsApp message ids are unique only within one chat (`recipient`) and sender, so
 * under the old index a message sharing its id with one of another chat was lost (counted as a
 * duplicate). Where 000002 made the new index already, this does nothing.
 *
 * Laravel 8 has no Schema::hasIndex, so the indexes are looked up by name in each database's
 * catalogue, and each step is taken only where it is still needed: MySQL and MariaDB cannot roll
 * DDL back, so a run stopped half-way can simply be run again. The new index is created before
 * the old one is dropped: the old one guarantees the rows are unique on the four columns (so the
 * creation cannot fail on the data), and the table is never left without a unique key.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    private const TABLE = 'whatsapp_messages';

    /**
     * What identifies a message. message_id comes second so that the index also serves look-ups
     * by (session_id, message_id), as the old one did: no other index is needed for those. Four
     * varchar(191) of utf8mb4 make a 3,056-byte key on MySQL and MariaDB, under InnoDB's 3,072
     * (with DYNAMIC rows, and with COMPACT ones too, each column staying under 767 bytes).
     * PostgreSQL refuses a B-tree entry over about 2,700 bytes, which only values far longer than
     * JIDs and message ids reach; such a message would be refused alone and reported in failed_ids.
     */
    private const IDENTITY = ['session_id', 'message_id', 'recipient', 'sender'];

    /** The old unique columns. */
    private const OLD = ['session_id', 'message_id'];

    public function up(): void
    {
        if (!Schema::hasTable(self::TABLE)) {
            return;
        }
        if (!self::hasIndex(self::identityIndex())) {
            Schema::table(self::TABLE, static function (Blueprint $table): void {
                $table->unique(self::IDENTITY, self::identityIndex());
            });
        }
        if (self::hasIndex(self::oldIndex())) {
            Schema::table(self::TABLE, static function (Blueprint $table): void {
                $table->dropUnique(self::oldIndex());
            });
        }
    }

    /**
     * Restores the unique (session_id, message_id), but only when no two rows share those two
     * (messages of different chats or senders stored meanwhile). Otherwise it refuses, naming how
     * many ids are shared, rather than delete messages or leave the schema other than this
     * migration's state says: the old index cannot hold those rows.
     */
    public function down(): void
    {
        if (!Schema::hasTable(self::TABLE)) {
            return;
        }
        if (!self::hasIndex(self::oldIndex())) {
            $shared = DB::query()->fromSub(
                DB::table(self::TABLE)->select(self::OLD)->groupBy(self::OLD)->havingRaw('count(*) > 1'),
                'shared'
            )->count();
            if ($shared > 0) {
                throw new RuntimeException(sprintf(
                    'Cannot restore the unique index on %s (session_id, message_id): %d message'
                    . ' id(s) are stored more than once in a session, for different chats or senders.'
                    . ' Delete the rows you do not need first, or keep migration 2024_06_01_000006.',
                    self::TABLE,
                    $shared
                ));
            }
            Schema::table(self::TABLE, static function (Blueprint $table): void {
                $table->unique(self::OLD, self::oldIndex());
            });
        }
        if (self::hasIndex(self::identityIndex())) {
            Schema::table(self::TABLE, static function (Blueprint $table): void {
                $table->dropUnique(self::identityIndex());
            });
        }
    }

    /** The new index's name, as 2024_06_01_000002 gives it (prefixed like Laravel's own names). */
    private static function identityIndex(): string
    {
        return Schema::getConnection()->getTablePrefix() . 'whatsapp_messages_identity_unique';
    }

    /** The old index's name: the one Laravel gave `unique(['session_id', 'message_id'])`. */
    private static function oldIndex(): string
    {
        return Schema::getConnection()->getTablePrefix() . 'whatsapp_messages_session_id_message_id_unique';
    }

    /** Whether the table has an index (or, on PostgreSQL, a unique constraint's index) named `$name`. */
    private static function hasIndex(string $name): bool
    {
        $connection = Schema::getConnection();
        $sql = match ($connection->getDriverName()) {
            'sqlite' => "SELECT 1 FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?",
            'mysql', 'mariadb' => 'SELECT 1 FROM information_schema.STATISTICS'
                . ' WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ? LIMIT 1',
            'pgsql' => 'SELECT 1 FROM pg_indexes'
                . ' WHERE schemaname = ANY (current_schemas(false)) AND tablename = ? AND indexname = ?',
            'sqlsrv' => 'SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(?) AND name = ?',
            default => throw new RuntimeException(sprintf(
                'Migration 2024_06_01_000006 cannot list the indexes of a %s database.',
                $connection->getDriverName()
            )),
        };

        return $connection->selectOne($sql, [$connection->getTablePrefix() . self::TABLE, $name]) !== null;
    }
};
