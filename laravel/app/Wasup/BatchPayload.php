<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Log;
use Illuminate\Support\Facades\Validator;

/**
 * Reads and validates a wasup request body. The raw body is decoded here rather than through
 * `$request->input()`, so global middleware such as TrimStrings cannot alter what was signed.
 *
 * A batch is checked in two steps. Its structure as a whole: a malformed body answers 422, and
 * too many items 413, so wasup splits the batch. Then each item alone, with its lane's rules: an
 * item that fails is rejected by itself (reported in `rejected` with the reason, never stored)
 * and the others go on. So one bad item never costs the rest of its batch.
 */
final class BatchPayload
{
    /** Session ids as wasup makes them: letters, digits, `-` and `_`. */
    public const SESSION_ID_RULES = ['required', 'string', 'max:191', 'regex:/^[A-Za-z0-9_-]+$/'];

    /** Longest reason `rejected` carries: wasup keeps it with the dead letter and logs it. */
    private const REASON_MAX_CHARS = 200;

    /**
     * The items of a split call: the non-empty list under the lane's key (`{"qrs":[...]}`), each
     * item checked against the lane's rules. Answers 422 on a malformed body and 413 on more than
     * the configured number of items; an item failing the rules is rejected alone.
     */
    public static function items(Request $request, Lane $lane): Batch
    {
        $body = self::decode($request);
        $items = $body[$lane->key] ?? null;
        if (!is_array($items) || $items === [] || !array_is_list($items)) {
            Responses::abort(422, "The body must be {\"{$lane->key}\": [ ...items ]} with at least one item.", [
                'errors' => [$lane->key => ["The {$lane->key} field must be a non-empty list."]],
            ]);
        }

        return self::checked([$lane->key => $items], [$lane]);
    }

    /**
     * The items of a combined call (`{"qrs":[...],"statuses":[...],"messages":[...]}`), by lane key
     * in the order of `$lanes`, holding only the lanes the body carries. Any lane may be absent, but
     * every key present must be a list and at least one item must be there (422 otherwise); 413 on
     * more items in all than the configured number. Items are then checked as by items(), each
     * with its own lane's rules.
     *
     * @param list<Lane> $lanes
     */
    public static function lanes(Request $request, array $lanes): Batch
    {
        $body = self::decode($request);
        $batch = [];
        $errors = [];
        foreach ($lanes as $lane) {
            if (!array_key_exists($lane->key, $body)) {
                continue;
            }
            $items = $body[$lane->key];
            if (is_array($items) && array_is_list($items)) {
                $batch[$lane->key] = $items;
            } else {
                $errors[$lane->key] = ["The {$lane->key} field must be a list."];
            }
        }
        $keys = implode(', ', array_map(static fn (Lane $lane): string => $lane->key, $lanes));
        if ($errors !== []) {
            Responses::abort(422, "Each of {$keys} must be a list of items.", ['errors' => $errors]);
        }
        if (array_sum(array_map('count', $batch)) === 0) {
            Responses::abort(422, "The body must carry at least one item under {$keys}.", [
                'errors' => ['body' => ["At least one of {$keys} must be a non-empty list."]],
            ]);
        }

        return self::checked($batch, $lanes);
    }

    /**
     * The body itself as one item of `$lane` (the legacy single-item calls). A bad item is the
     * whole request here, so it answers 422.
     */
    public static function single(Request $request, Lane $lane): Batch
    {
        $body = self::decode($request);
        $validator = Validator::make($body, $lane->rules($body));
        if ($validator->fails()) {
            Responses::abort(422, 'The given data was invalid.', [
                'errors' => $validator->errors()->toArray(),
            ]);
        }

        return Batch::one($lane, $body);
    }

    /**
     * `$batch` (lists by lane key) split into valid and rejected items, once it holds no more
     * items than allowed (413) and every item can be named by its lane's id field (422).
     *
     * @param array<string, list<mixed>> $batch
     * @param list<Lane> $lanes
     */
    private static function checked(array $batch, array $lanes): Batch
    {
        if (array_sum(array_map('count', $batch)) > Settings::maxBatchItems()) {
            Responses::abort(413, 'Too many items in one batch; split it.', [
                'max_items' => Settings::maxBatchItems(),
            ]);
        }
        self::requireIds($batch, $lanes);
        $valid = [];
        $rejected = [];
        foreach ($lanes as $lane) {
            if (!array_key_exists($lane->key, $batch)) {
                continue;
            }
            $valid[$lane->key] = [];
            $rejected[$lane->key] = [];
            foreach ($batch[$lane->key] as $item) {
                $reason = self::reason($item, $lane);
                if ($reason === null) {
                    $valid[$lane->key][] = $item;
                    continue;
                }
                $id = (string) $lane->id($item);
                $rejected[$lane->key][$id] ??= $reason;
                Log::warning('wasup: item rejected', [
                    'lane' => $lane->name,
                    'id' => $id,
                    'reason' => $reason,
                ]);
            }
        }

        return new Batch($valid, $rejected);
    }

    /**
     * Refuses the batch (422) when an item cannot be named: it is not an object, or its id field
     * is missing or not a string or number. Such an item can be neither listed in `rejected` nor
     * retried alone, so the batch goes back whole, and wasup splits it until it finds the item.
     *
     * @param array<string, list<mixed>> $batch
     * @param list<Lane> $lanes
     */
    private static function requireIds(array $batch, array $lanes): void
    {
        $errors = [];
        foreach ($lanes as $lane) {
            foreach ($batch[$lane->key] ?? [] as $index => $item) {
                if (!is_array($item)) {
                    $errors["{$lane->key}.{$index}"] = ['Each item must be an object.'];
                } elseif ($lane->id($item) === null) {
                    $errors["{$lane->key}.{$index}.{$lane->idField}"] = [
                        "The {$lane->idField} field is required, a string or a number.",
                    ];
                }
            }
        }
        if ($errors !== []) {
            Responses::abort(422, 'Items without their id cannot be rejected alone.', ['errors' => $errors]);
        }
    }

    /**
     * Why `$item` fails its lane's rules (the first validation message), or null when it passes.
     * Laravel's messages name the field and the rule, never the value, so no message text or QR
     * data ends up in the answer or the logs.
     *
     * @param array<string, mixed> $item
     */
    private static function reason(array $item, Lane $lane): ?string
    {
        $validator = Validator::make($item, $lane->rules($item));
        if (!$validator->fails()) {
            return null;
        }

        return mb_substr((string) $validator->errors()->first(), 0, self::REASON_MAX_CHARS);
    }

    /** @return array<string, mixed> */
    private static function decode(Request $request): array
    {
        try {
            $body = json_decode($request->getContent(), true, 64, JSON_THROW_ON_ERROR);
        } catch (\JsonException $error) {
            Responses::abort(422, 'The body is not valid JSON: ' . $error->getMessage());
        }
        if (!is_array($body)) {
            Responses::abort(422, 'The body must be a JSON object.');
        }

        return $body;
    }
}
