<?php

declare(strict_types=1);

namespace App\Wasup;

/**
 * One kind of item wasup sends (a lane of its batcher): the body key its items come under, the
 * rules each item must pass (alone: a failing item is rejected by itself), the field
 * `failed_ids` and `rejected` name it by, and the writer that stores it. The split calls
 * (`POST /qr/batch`, ...) carry one lane each; `POST /whatsapp/events/batch` carries any of them,
 * applied in the order of Lane::all(). Defined once here, so both paths validate and store an
 * item the same way.
 */
final class Lane
{
    /** The `estado_qr` values wasup sends. */
    public const ESTADOS = ['pending', 'active', 'inactive', 'expired'];

    /** The longest message text WhatsApp sends, in characters. */
    public const MESSAGE_TEXT_MAX_CHARS = 65536;

    /**
     * @param string $key body key of the list (`qrs`, `statuses`, `messages`)
     * @param string $name what logs call the lane
     * @param string $idField item field `failed_ids` and `rejected` name an item by
     * @param array<string, array<int, mixed>> $fields validation rules per item field
     * @param array{class-string, string} $writer the class (resolved from the container) and
     *        method storing one item; it answers one of `$outcomes`
     * @param list<string> $outcomes what storing an item may answer, each counted in the answer
     */
    private function __construct(
        public readonly string $key,
        public readonly string $name,
        public readonly string $idField,
        public readonly array $fields,
        private readonly array $writer,
        public readonly array $outcomes,
    ) {
    }

    /** QR codes: the one each session shows now (`expires_at`: ms since the epoch). */
    public static function qrs(): self
    {
        return new self('qrs', 'qr', 'session_id', [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'qr' => ['required', 'string', 'max:65535'],
            'expires_at' => ['nullable', 'integer', 'min:0'],
            'user_id' => ['nullable', 'integer', 'min:0'],
            'timestamp' => ['nullable', 'integer', 'min:0'],
            'phone' => ['nullable', 'string', 'max:32'],
        ], [AccountWriter::class, 'applyQr'], AccountWriter::OUTCOMES);
    }

    /** Session statuses (`estado_qr`). */
    public static function statuses(): self
    {
        return new self('statuses', 'status', 'session_id', [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'estado_qr' => ['required', 'string', 'in:' . implode(',', self::ESTADOS)],
            'user_id' => ['nullable', 'integer', 'min:0'],
            'timestamp' => ['nullable', 'integer', 'min:0'],
            'phone' => ['nullable', 'string', 'max:32'],
        ], [AccountWriter::class, 'applyStatus'], AccountWriter::OUTCOMES);
    }

    /**
     * Incoming messages, each stored once by (session_id, message_id, recipient, sender), since
     * WhatsApp's message ids are unique only within one chat and sender (MessageWriter); reported
     * by message id alone, as wasup reads the answer, so two items of one batch sharing an id are
     * named once. `text` may be as long as WhatsApp allows, 65,536 characters (Laravel's `max`
     * counts characters, not bytes; the column is a MEDIUMTEXT). `to` must be sent but may be
     * empty or null: some messages have no recipient wasup can name (stored as '').
     */
    public static function messages(): self
    {
        return new self('messages', 'messages', 'message_id', [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'message_id' => ['required', 'string', 'max:191'],
            'from' => ['required', 'string', 'max:191'],
            'to' => ['present', 'nullable', 'string', 'max:191'],
            'timestamp' => ['required', 'integer', 'min:0'],
            'type' => ['required', 'string', 'max:32'],
            'text' => ['nullable', 'string', 'max:' . self::MESSAGE_TEXT_MAX_CHARS],
        ], [MessageWriter::class, 'store'], MessageWriter::OUTCOMES);
    }

    /**
     * Every lane, in the order a combined request applies them: QR codes, then statuses (so a
     * session's status lands after its QR), then messages.
     *
     * @return list<self>
     */
    public static function all(): array
    {
        return [self::qrs(), self::statuses(), self::messages()];
    }

    /**
     * The id `failed_ids` and `rejected` name `$item` by (its `$idField`, as a string), or null
     * when it has none that can name it: missing, empty, or not a string or number.
     *
     * @param array<string, mixed> $item
     */
    public function id(array $item): ?string
    {
        $id = $item[$this->idField] ?? null;
        if (!is_string($id) && !is_int($id) && !is_float($id)) {
            return null;
        }
        $id = (string) $id;

        return $id === '' ? null : $id;
    }

    /**
     * The function storing one item of this lane.
     *
     * @return callable(array<string, mixed>): string
     */
    public function writer(): callable
    {
        [$class, $method] = $this->writer;

        return [app($class), $method];
    }
}
