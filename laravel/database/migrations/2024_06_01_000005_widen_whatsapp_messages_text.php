<?php

/**
 * `whatsapp_messages.text` as MEDIUMTEXT on MySQL and MariaDB, for applications that ran
 * 2024_06_01_000002 while it made the column TEXT: that holds 65,535 bytes, and WhatsApp sends
 * up to 65,536 characters, up to 4 bytes each in utf8mb4. Written as plain SQL rather than
 * `->change()`, which needs doctrine/dbal before Laravel 10. SQLite's and PostgreSQL's `text`
 * has no such limit, so there (and where the column is already wider) it does nothing.
 */

declare(strict_types=1);

use Illuminate\Database\Migrations\Migration;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

return new class () extends Migration {
    /** Column types this migration widens; MEDIUMTEXT and LONGTEXT are left as they are. */
    private const NARROW_TYPES = ['tinytext', 'text'];

    public function up(): void
    {
        $connection = DB::connection();
        if (
            !in_array($connection->getDriverName(), ['mysql', 'mariadb'], true)
            || !Schema::hasTable('whatsapp_messages')
        ) {
            return;
        }
        $column = $connection->selectOne(
            'SELECT DATA_TYPE AS type, CHARACTER_SET_NAME AS charset, COLLATION_NAME AS collation,'
            . ' IS_NULLABLE AS nullable FROM information_schema.COLUMNS'
            . ' WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?',
            [$connection->getTablePrefix() . 'whatsapp_messages', 'text']
        );
        if ($column === null || !in_array(strtolower((string) $column->type), self::NARROW_TYPES, true)) {
            return;
        }
        // MODIFY redefines the whole column: restate what it keeps (charset, collation, NULL).
        $definition = 'MEDIUMTEXT';
        if (self::isName($column->charset) && self::isName($column->collation)) {
            $definition .= " CHARACTER SET {$column->charset} COLLATE {$column->collation}";
        }
        $definition .= $column->nullable === 'NO' ? ' NOT NULL' : ' NULL';
        $grammar = $connection->getQueryGrammar();
        $connection->statement(
            'ALTER TABLE ' . $grammar->wrapTable('whatsapp_messages')
            . ' MODIFY ' . $grammar->wrap('text') . ' ' . $definition
        );
    }

    /** Whether a charset or collation name from information_schema can go into the SQL as is. */
    private static function isName(mixed $name): bool
    {
        return is_string($name) && preg_match('/^[A-Za-z0-9_]+$/', $name) === 1;
    }

    /**
     * Leaves the column wide: narrowing it back to TEXT would fail on (or, without strict mode,
     * truncate) the messages longer than 65,535 bytes stored meanwhile, and 000002's down drops
     * the table anyway.
     */
    public function down(): void
    {
    }
};
