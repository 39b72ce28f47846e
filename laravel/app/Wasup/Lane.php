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
 *
 * A lane may carry several kinds of item, told apart by a field of the item (the messages lane:
 * incoming messages and outcomes of outgoing ones, by `direction`). Each kind has its own rules
 * and writer; the kind is picked here, once, so an item is always stored by the writer whose
 * rules it passed.
 */
final class Lane
{
    /** The `estado_qr` values wasup sends. */
    public const ESTADOS = ['pending', 'active', 'inactive', 'expired'];

    /** The longest message text WhatsApp sends, in characters. */
    public const MESSAGE_TEXT_MAX_CHARS = 65536;

    /** The `state` of an outgoing message's outcome: sent, or given up after its retries. */
    public const OUTGOING_STATES = ['sent', 'failed'];

    /** The longest `error` of an outgoing message's outcome wasup sends, in characters. */
    public const OUTGOING_ERROR_MAX_CHARS = 500;

    /** The kind of a lane that carries only one. */
    private const ONLY_KIND = 'item';

    /**
     * @param string $key body key of the list (`qrs`, `statuses`, `messages`)
     * @param string $name what logs call the lane
     * @param string $idField item field `failed_ids` and `rejected` name an item by
     * @param array<string, array{fields: array<string, array<int, mixed>>, writer: array{class-string, string}}> $kinds
     *        by kind, the validation rules per item field and the class (resolved from the
     *        container) and method storing one item, which answers one of `$outcomes`; the first
     *        kind is the default
     * @param string|null $kindField item field naming its kind (absent: the default kind); null
     *        when the lane has one kind
     * @param list<string> $outcomes what storing an item may answer, each counted in the answer
     */
    private function __construct(
        public readonly string $key,
        public readonly string $name,
        public readonly string $idField,
        private readonly array $kinds,
        private readonly ?string $kindField,
        public readonly array $outcomes,
    ) {
    }

    /** QR codes: the one each session shows now (`expires_at`: ms since the epoch). */
    public static function qrs(): self
    {
        return self::ofOneKind('qrs', 'qr', 'session_id', [
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
        return self::ofOneKind('statuses', 'status', 'session_id', [
            'session_id' => BatchPayload::SESSION_ID_RULES,
            'estado_qr' => ['required', 'string', 'in:' . implode(',', self::ESTADOS)],
            'user_id' => ['nullable', 'integer', 'min:0'],
            'timestamp' => ['nullable', 'integer', 'min:0'],
            'phone' => ['nullable', 'string', 'max:32'],
        ], [AccountWriter::class, 'applyStatus'], AccountWriter::OUTCOMES);
    }

    /**
     * Messages, of two kinds told apart by `direction` (absent: incoming, as wasup sent them
     * before it reported outgoing ones), both reported by `message_id`:
     *
     * - `incoming`: messages received, each stored once by (session_id, message_id, recipient,
     *   sender), since WhatsApp's message ids are unique only within one chat and sender
     *   (MessageWriter); reported by message id alone, as wasup reads the answer, so two items of
     *   one batch sharing an id are named once. `text` may be as long as WhatsApp allows, 65,536
     *   characters (Laravel's `max` counts characters, not bytes; the column is a MEDIUMTEXT).
     *   `to` must be sent but may be empty or null: some messages have no recipient wasup can name
     *   (stored as '').
     * - `outgoing`: the outcome of a message wasup sent for the application (`message_id` is
     *   wasup's id of it, as `POST /sessions/{id}/messages` answered): `sent` with WhatsApp's id,
     *   or `failed` with a reason. wasup may report it more than once; the latest (by
     *   `timestamp`) wins (OutgoingMessageWriter).
     */
    public static function messages(): self
    {
        return new self('messages', 'messages', 'message_id', [
            'incoming' => [
                'fields' => [
                    'session_id' => BatchPayload::SESSION_ID_RULES,
                    'message_id' => ['required', 'string', 'max:191'],
                    'from' => ['required', 'string', 'max:191'],
                    'to' => ['present', 'nullable', 'string', 'max:191'],
                    'timestamp' => ['required', 'integer', 'min:0'],
                    'type' => ['required', 'string', 'max:32'],
                    'text' => ['nullable', 'string', 'max:' . self::MESSAGE_TEXT_MAX_CHARS],
                ],
                'writer' => [MessageWriter::class, 'store'],
            ],
            'outgoing' => [
                'fields' => [
                    'session_id' => BatchPayload::SESSION_ID_RULES,
                    'message_id' => ['required', 'string', 'max:191'],
                    'state' => ['required', 'string', 'in:' . implode(',', self::OUTGOING_STATES)],
                    'whatsapp_id' => ['nullable', 'string', 'max:191'],
                    'to' => ['required', 'string', 'max:191'],
                    'error' => ['nullable', 'string', 'max:' . self::OUTGOING_ERROR_MAX_CHARS],
                    'timestamp' => ['required', 'integer', 'min:0'],
                ],
                'writer' => [OutgoingMessageWriter::class, 'apply'],
            ],
        ], 'direction', array_values(array_unique(array_merge(
            MessageWriter::OUTCOMES,
            OutgoingMessageWriter::OUTCOMES
        ))));
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
     * The rules `$item` must pass: those of its kind, after the kind field's own (when sent, it
     * must name one of the lane's kinds). That rule comes first, so an item of an unknown kind is
     * rejected for its kind, not for the fields of the default kind it is then checked against.
     *
     * @param array<string, mixed> $item
     * @return array<string, array<int, mixed>>
     */
    public function rules(array $item): array
    {
        $fields = $this->kinds[$this->kind($item)]['fields'];
        if ($this->kindField === null) {
            return $fields;
        }

        return [$this->kindField => ['sometimes', 'string', 'in:' . implode(',', array_keys($this->kinds))]]
            + $fields;
    }

    /**
     * The function storing one item of this lane, with its kind's writer (each resolved from the
     * container once, when first needed).
     *
     * @return callable(array<string, mixed>): string
     */
    public function writer(): callable
    {
        $writers = [];

        return function (array $item) use (&$writers): string {
            [$class, $method] = $this->kinds[$this->kind($item)]['writer'];
            $writers[$class] ??= app($class);

            return $writers[$class]->{$method}($item);
        };
    }

    /**
     * A lane of one kind of item.
     *
     * @param array<string, array<int, mixed>> $fields
     * @param array{class-string, string} $writer
     * @param list<string> $outcomes
     */
    private static function ofOneKind(
        string $key,
        string $name,
        string $idField,
        array $fields,
        array $writer,
        array $outcomes,
    ): self {
        $kinds = [self::ONLY_KIND => ['fields' => $fields, 'writer' => $writer]];

        return new self($key, $name, $idField, $kinds, null, $outcomes);
    }

    /**
     * The kind of `$item`: the one its kind field names, or the default kind (the first) when it
     * names none. An item naming an unknown kind fails rules()' kind rule, so it is never stored.
     *
     * @param array<string, mixed> $item
     */
    private function kind(array $item): string
    {
        $kind = $this->kindField === null ? null : ($item[$this->kindField] ?? null);

        return is_string($kind) && isset($this->kinds[$kind]) ? $kind : (string) array_key_first($this->kinds);
    }
}
