import { Type, TSchema, TObject, TProperties, TArray, TUnsafe } from '@sinclair/typebox';

/**
 * The schema builders below wrap TypeBox so that every schema they make is a Kubernetes
 * structural schema (no `anyOf` of types, no `const`, no `patternProperties`) and carries a
 * description, which `kubectl explain` prints. TypeBox infers the TypeScript type of each
 * schema, so the types the controller uses and the CRD the API server checks come from the
 * same lines.
 */

/** ValidationRule is one CEL rule of `x-kubernetes-validations`. */
export interface ValidationRule {
  /** The CEL expression; `self` is the value at this node, `oldSelf` the stored one. */
  rule: string;
  /** What the user reads when the rule fails; it names the field and what is expected. */
  message: string;
  /** The field the error is reported at, relative to this node (for example `.minSites`). */
  fieldPath?: string;
  /** The error reason: FieldValueInvalid (the API server's default), FieldValueForbidden... */
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired';
}

interface Common<T> {
  /** What the field is for; required on every field. */
  description: string;
  /** The value the API server fills in when the field is left out. */
  default?: T;
  /** CEL rules at this node. */
  rules?: ValidationRule[];
}

function extensions<T>(c: Common<T>): Record<string, unknown> {
  const out: Record<string, unknown> = { description: c.description };
  if (c.default !== undefined) out.default = c.default;
  if (c.rules && c.rules.length > 0) out['x-kubernetes-validations'] = c.rules;
  return out;
}

/** str is a string field; `maxLength` keeps CEL rules on it within the API server's budget. */
export function str(
  c: Common<string> & { maxLength?: number; minLength?: number; pattern?: string },
): TSchema & { static: string } {
  const { maxLength, minLength, pattern } = c;
  return Type.String({
    ...extensions(c),
    ...(maxLength !== undefined && { maxLength }),
    ...(minLength !== undefined && { minLength }),
    ...(pattern !== undefined && { pattern }),
  });
}

/** int is an integer field (int64 on the wire, as Kubernetes counts). */
export function int(
  c: Common<number> & { minimum?: number; maximum?: number },
): TSchema & { static: number } {
  const { minimum, maximum } = c;
  return Type.Integer({
    ...extensions(c),
    format: 'int64',
    ...(minimum !== undefined && { minimum }),
    ...(maximum !== undefined && { maximum }),
  });
}

/**
 * num is a floating-point field. `exclusiveMinimum` is a boolean beside `minimum`, the
 * OpenAPI v3.0 form the API server reads.
 */
export function num(
  c: Common<number> & {
    minimum?: number;
    maximum?: number;
    exclusiveMinimum?: boolean;
    exclusiveMaximum?: boolean;
  },
): TSchema & { static: number } {
  const { minimum, maximum, exclusiveMinimum, exclusiveMaximum } = c;
  return Type.Unsafe<number>({
    type: 'number',
    ...extensions(c),
    ...(minimum !== undefined && { minimum }),
    ...(maximum !== undefined && { maximum }),
    ...(exclusiveMinimum && { exclusiveMinimum }),
    ...(exclusiveMaximum && { exclusiveMaximum }),
  });
}

/** bool is a boolean field. */
export function bool(c: Common<boolean>): TSchema & { static: boolean } {
  return Type.Boolean(extensions(c));
}

/** oneOfStrings is a string restricted to `values` (a Kubernetes `enum`). */
export function oneOfStrings<T extends string>(values: readonly T[], c: Common<T>): TUnsafe<T> {
  return Type.Unsafe<T>({ type: 'string', enum: [...values], ...extensions(c) });
}

/** dateTime is an RFC 3339 timestamp, as Kubernetes writes them. */
export function dateTime(c: Common<string>): TUnsafe<string> {
  return Type.Unsafe<string>({ type: 'string', format: 'date-time', ...extensions(c) });
}

/** stringMap is a map from string keys to string values (labels, node selectors). */
export function stringMap(c: Common<Record<string, string>>): TUnsafe<Record<string, string>> {
  return Type.Unsafe<Record<string, string>>({
    type: 'object',
    additionalProperties: { type: 'string' },
    ...extensions(c),
  });
}

/** numberMap is a map from string keys to numbers (strategy parameters). */
export function numberMap(
  c: Common<Record<string, number>> & { maxProperties: number },
): TUnsafe<Record<string, number>> {
  return Type.Unsafe<Record<string, number>>({
    type: 'object',
    additionalProperties: { type: 'number' },
    maxProperties: c.maxProperties,
    ...extensions(c),
  });
}

/**
 * opaque is a Kubernetes core type (Volume source, Affinity, Toleration, ResourceRequirements)
 * kept whole with `x-kubernetes-preserve-unknown-fields`. The CRD does not repeat their
 * schemas: the API server validates them where it matters, when the controller puts them in
 * a Pod, and the controller reports that rejection on the job. `T` is the type from
 * @kubernetes/client-node, so the builders pass the value on unchanged.
 */
export function opaque<T>(c: Common<T>): TUnsafe<T> {
  return Type.Unsafe<T>({
    type: 'object',
    'x-kubernetes-preserve-unknown-fields': true,
    ...extensions(c),
  });
}

/** obj is an object with known fields; unknown fields are pruned (or refused by kubectl). */
export function obj<P extends TProperties>(properties: P, c: Common<unknown>): TObject<P> {
  return Type.Object(properties, extensions(c));
}

/** list is an array; `maxItems` bounds both storage and the cost of CEL rules over it. */
export function list<T extends TSchema>(
  items: T,
  c: Common<unknown> & {
    maxItems: number;
    minItems?: number;
    /** `map` lists merge by `mapKeys` under server-side apply. */
    listType?: 'atomic' | 'set' | 'map';
    mapKeys?: string[];
  },
): TArray<T> {
  const { maxItems, minItems, listType, mapKeys } = c;
  return Type.Array(items, {
    ...extensions(c),
    maxItems,
    ...(minItems !== undefined && { minItems }),
    ...(listType !== undefined && { 'x-kubernetes-list-type': listType }),
    ...(mapKeys !== undefined && { 'x-kubernetes-list-map-keys': mapKeys }),
  });
}

/** optional marks a field the user may leave out and that has no default. */
export const optional = Type.Optional;
