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
     * The list under `$key` (`qrs`, `statuses`, `messages`), each item checked against `$itemRules`.
     * Answers 422 on malformed input and 413 on more than the configured number of items.
     *
     * @param array<string, array<int, mixed>> $itemRules
     * @return list<array<string, mixed>>
     */
    public static function items(Request $request, string $key, array $itemRules): array
    {
        $body = self::decode($request);
        $items = $body[$key] ?? null;
        if (!is_array($items) || $items === [] || array_keys($items) !== range(0, count($items) - 1)) {
            Responses::abort(422, "The body must be {\"{$key}\": [ ...items ]} with at least one item.", [
                'errors' => [$key => ["The {$key} field must be a non-empty list."]],
            ]);
        }
        if (count($items) > Settings::maxBatchItems()) {
            Responses::abort(413, 'Too many items in one batch; split it.', [
                'max_items' => Settings::maxBatchItems(),
            ]);
        }
        $rules = ["{$key}.*" => ['required', 'array']];
        foreach ($itemRules as $field => $fieldRules) {
            $rules["{$key}.*.{$field}"] = $fieldRules;
        }
        self::validate([$key => $items], $rules);

        return $items;
    }

    /**
     * The body itself as one item (the legacy single-item calls).
     *
     * @param array<string, array<int, mixed>> $itemRules
     * @return array<string, mixed>
     */
    public static function single(Request $request, array $itemRules): array
    {
        $body = self::decode($request);
        self::validate($body, $itemRules);

        return $body;
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
