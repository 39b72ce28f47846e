<?php

declare(strict_types=1);

namespace App\Wasup;

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Validator;

/**
 * Reads and validates a wasup request body. The raw body is decoded here rather than through
 * `$request->input()`, so global middleware such as TrimStrings cannot alter what was signed.
 */
final class BatchPayload
{
    /** Session ids as wasup makes them: letters, digits, `-` and `_`. */
    public const SESSION_ID_RULES = ['required', 'string', 'max:191', 'regex:/^[A-Za-z0-9_-]+$/'];

    /**
     * The items of a split call: the non-empty list under the lane's key (`{"qrs":[...]}`), each
     * item checked against the lane's rules. Answers 422 on malformed input and 413 on more than
     * the configured number of items.
     *
     * @return list<array<string, mixed>>
     */
    public static function items(Request $request, Lane $lane): array
    {
        $body = self::decode($request);
        $items = $body[$lane->key] ?? null;
        if (!is_array($items) || $items === [] || !array_is_list($items)) {
            Responses::abort(422, "The body must be {\"{$lane->key}\": [ ...items ]} with at least one item.", [
                'errors' => [$lane->key => ["The {$lane->key} field must be a non-empty list."]],
            ]);
        }

        return self::checked([$lane->key => $items], [$lane])[$lane->key];
    }

    /**
     * The items of a combined call (`{"qrs":[...],"statuses":[...],"messages":[...]}`), by lane key
     * in the order of `$lanes`, holding only the lanes the body carries. Any lane may be absent, but
     * every key present must be a list and at least one item must be there. The same checks as
     * items(), over the whole body: 422 on malformed input (any bad item refuses the request, as
     * in a split call), 413 on more items in all than the configured number.
     *
     * @param list<Lane> $lanes
     * @return array<string, list<array<string, mixed>>>
     */
    public static function lanes(Request $request, array $lanes): array
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
     * The body itself as one item of `$lane` (the legacy single-item calls).
     *
     * @return array<string, mixed>
     */
    public static function single(Request $request, Lane $lane): array
    {
        $body = self::decode($request);
        self::validate($body, $lane->fields);

        return $body;
    }

    /**
     * `$batch` (lists by lane key) once it holds no more items than allowed (413) and every item
     * passes its lane's rules (422).
     *
     * @param array<string, list<array<string, mixed>>> $batch
     * @param list<Lane> $lanes
     * @return array<string, list<array<string, mixed>>>
     */
    private static function checked(array $batch, array $lanes): array
    {
        if (array_sum(array_map('count', $batch)) > Settings::maxBatchItems()) {
            Responses::abort(413, 'Too many items in one batch; split it.', [
                'max_items' => Settings::maxBatchItems(),
            ]);
        }
        $rules = [];
        foreach ($lanes as $lane) {
            if (array_key_exists($lane->key, $batch)) {
                $rules += $lane->listRules();
            }
        }
        self::validate($batch, $rules);

        return $batch;
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

    /**
     * @param array<string, mixed> $data
     * @param array<string, array<int, mixed>> $rules
     */
    private static function validate(array $data, array $rules): void
    {
        $validator = Validator::make($data, $rules);
        if ($validator->fails()) {
            Responses::abort(422, 'The given data was invalid.', [
                'errors' => $validator->errors()->toArray(),
            ]);
        }
    }
}
