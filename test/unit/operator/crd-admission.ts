import Ajv, { ErrorObject } from 'ajv';
import { run, isCelError } from '@bufbuild/cel';
import { JsonSchema } from '../../../operator/api/crd';

/**
 * admit checks an object against a CRD's openAPIV3Schema the way the API server does on
 * create (and on update, with `old`): unknown fields refused (kubectl's strict field
 * validation), defaults filled in, the schema checked, then every CEL rule evaluated with
 * `self` and, for transition rules, `oldSelf`. It returns the defaulted object and the
 * errors in the API server's shape: `<field path>: <message>`.
 *
 * The API server cannot run in a unit test; the end-to-end tests apply the same CRD to a
 * real one. What this stands in for is the published semantics of structural schemas and
 * CEL validation rules, not any code of ours.
 */
export function admit(
  schema: JsonSchema,
  object: unknown,
  old?: unknown,
): { object: Record<string, unknown>; errors: string[] } {
  const copy = structuredClone(object) as Record<string, unknown>;
  const validate = compile(schema);
  if (!validate(copy)) {
    return { object: copy, errors: (validate.errors ?? []).map(schemaError) };
  }
  const errors: string[] = [];
  checkRules(schema, copy, old, '', errors);
  return { object: copy, errors };
}

type Json = Record<string, unknown>;

const compiled = new WeakMap<JsonSchema, ReturnType<Ajv['compile']>>();

function compile(schema: JsonSchema): ReturnType<Ajv['compile']> {
  let v = compiled.get(schema);
  if (!v) {
    const ajv = new Ajv({
      useDefaults: true,
      allErrors: true,
      strict: false,
      validateFormats: false,
    });
    v = ajv.compile(toDraft7(schema));
    compiled.set(schema, v);
  }
  return v;
}

/**
 * toDraft7 rewrites the OpenAPI v3.0 parts ajv reads differently (boolean exclusive bounds)
 * and closes every object with known properties, as strict field validation does.
 */
function toDraft7(node: Json): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) {
    if (k.startsWith('x-kubernetes-') || k === 'exclusiveMinimum' || k === 'exclusiveMaximum')
      continue;
    if (k === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(v as Record<string, Json>).map(([name, s]) => [name, toDraft7(s)]),
      );
    } else if ((k === 'items' || k === 'additionalProperties') && typeof v === 'object') {
      out[k] = toDraft7(v as Json);
    } else {
      out[k] = v;
    }
  }
  if (node.exclusiveMinimum === true) {
    out.exclusiveMinimum = node.minimum;
    delete out.minimum;
  }
  if (node.exclusiveMaximum === true) {
    out.exclusiveMaximum = node.maximum;
    delete out.maximum;
  }
  if (node.properties && !node['x-kubernetes-preserve-unknown-fields']) {
    out.additionalProperties = false;
  }
  return out;
}

function schemaError(e: ErrorObject): string {
  const field = e.instancePath
    .replace(/^\//, '')
    .replace(/\/(\d+)/g, '[$1]')
    .replace(/\//g, '.');
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty: string }).additionalProperty;
    return `${field ? `${field}.` : ''}${extra}: field not declared in schema`;
  }
  if (e.keyword === 'required') {
    const missing = (e.params as { missingProperty: string }).missingProperty;
    return `${field ? `${field}.` : ''}${missing}: Required value`;
  }
  return `${field}: Invalid value: ${e.message}`;
}

/** celValue converts JSON to CEL values: integers of integer fields become CEL ints. */
function celValue(schema: Json | undefined, value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => celValue(schema?.items as Json, v));
  if (value !== null && typeof value === 'object') {
    const props = schema?.properties as Record<string, Json> | undefined;
    const extra = schema?.additionalProperties as Json | undefined;
    return new Map(Object.entries(value).map(([k, v]) => [k, celValue(props?.[k] ?? extra, v)]));
  }
  if (typeof value === 'number' && schema?.type === 'integer') return BigInt(value);
  return value;
}

function checkRules(
  schema: Json,
  value: unknown,
  old: unknown,
  path: string,
  errors: string[],
): void {
  if (value === undefined) return;
  for (const r of (schema['x-kubernetes-validations'] as Json[] | undefined) ?? []) {
    const rule = r.rule as string;
    const transition = /\boldSelf\b/.test(rule);
    // Transition rules only run on update, and only where there is an old value.
    if (transition && old === undefined) continue;
    const bindings: Record<string, unknown> = { self: celValue(schema, value) };
    if (transition) bindings.oldSelf = celValue(schema, old);
    const result = run(rule, bindings as Parameters<typeof run>[1]);
    if (isCelError(result)) {
      errors.push(`${path || '<root>'}: rule ${rule} could not run: ${result.message}`);
    } else if (result !== true) {
      const at = `${path}${(r.fieldPath as string | undefined) ?? ''}`.replace(/^\./, '');
      errors.push(`${at || '<root>'}: ${r.message as string}`);
    }
  }
  const props = schema.properties as Record<string, Json> | undefined;
  if (props && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [name, child] of Object.entries(props)) {
      const oldChild = old !== null && typeof old === 'object' ? (old as Json)[name] : undefined;
      checkRules(child, (value as Json)[name], oldChild, `${path}.${name}`, errors);
    }
  }
  if (schema.items && Array.isArray(value)) {
    // List items are not correlated with old ones here; no item rule of ours uses oldSelf.
    value.forEach((item, i) =>
      checkRules(schema.items as Json, item, undefined, `${path}[${i}]`, errors),
    );
  }
}

/**
 * defaultErrors checks every `default` against the CEL rules of its own node, as the API
 * server does when the CRD is created: on the default exactly as written, before the nested
 * fields' defaults are filled in.
 */
export function defaultErrors(schema: JsonSchema, path = ''): string[] {
  const errors: string[] = [];
  if (schema.default !== undefined) {
    const rules = { ...schema, properties: undefined, items: undefined };
    checkRules(rules, schema.default, undefined, `${path}.default`, errors);
  }
  for (const [name, child] of Object.entries((schema.properties as Record<string, Json>) ?? {})) {
    errors.push(...defaultErrors(child, `${path}.${name}`));
  }
  if (schema.items) errors.push(...defaultErrors(schema.items as Json, `${path}[]`));
  return errors;
}
