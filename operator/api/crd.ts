import { stringify } from 'yaml';
import {
  CATEGORIES,
  FederatedJobSpecSchema,
  FederatedJobStatusSchema,
  GROUP,
  KIND,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  VERSION,
} from './federatedjob';

/** CRD_NAME is the CustomResourceDefinition's own name: `<plural>.<group>`. */
export const CRD_NAME = `${PLURAL}.${GROUP}`;

/** CRD_FILES are where the generated CRD is checked in, relative to the repository root. */
export const CRD_FILES = [
  `crds/${GROUP}_${PLURAL}.yaml`,
  `charts/flotilla/crds/${GROUP}_${PLURAL}.yaml`,
];

type Json = Record<string, unknown>;

/**
 * JsonSchema is an OpenAPI v3 schema in its wire form. (@kubernetes/client-node's
 * V1JSONSchemaProps renames the `x-kubernetes-*` keys for its own serializer, so this file
 * keeps to plain JSON, which is what the YAML and the API server carry.)
 */
export type JsonSchema = Json;

/** CustomResourceDefinition is the apiextensions.k8s.io/v1 object, in its wire form. */
export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string };
  spec: {
    group: string;
    scope: 'Namespaced' | 'Cluster';
    names: Json;
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      subresources: Json;
      additionalPrinterColumns: Array<Json>;
      schema: { openAPIV3Schema: JsonSchema };
    }>;
  };
}

/**
 * structural turns a TypeBox schema into the plain JSON the API server reads: the TypeBox
 * symbols are dropped, and a field with a default leaves `required`, because the user may
 * leave it out and the API server fills it in before validation.
 */
export function structural(schema: unknown): JsonSchema {
  const plain = JSON.parse(JSON.stringify(schema)) as Json;
  const walk = (node: Json): Json => {
    const properties = node.properties as Record<string, Json> | undefined;
    if (properties) {
      for (const [name, child] of Object.entries(properties)) properties[name] = walk(child);
      const required = ((node.required as string[] | undefined) ?? []).filter(
        (name) => properties[name].default === undefined,
      );
      if (required.length > 0) node.required = required;
      else delete node.required;
    }
    if (node.items && typeof node.items === 'object') node.items = walk(node.items as Json);
    // kubectl explain prints the description but not the default: say it in words.
    if (isScalar(node.default) && !/\bDefault\b/.test(String(node.description))) {
      node.description = `${String(node.description)} Default: ${String(node.default)}.`;
    }
    return ordered(node);
  };
  return walk(plain);
}

function isScalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

// Keys in the order a reader of the YAML wants them: what it is, then its limits, then inside.
const FIRST_KEYS = ['type', 'format', 'description', 'default'];
const LAST_KEYS = ['required', 'properties', 'additionalProperties', 'items'];

function ordered(node: Json): Json {
  const rank = (k: string): number =>
    FIRST_KEYS.includes(k) ? FIRST_KEYS.indexOf(k) - 10 : LAST_KEYS.indexOf(k) + 1;
  const out: Json = {};
  for (const key of Object.keys(node).sort((a, b) => rank(a) - rank(b))) out[key] = node[key];
  return out;
}

// Job names become pod, Service and certificate names; a DNS label fits all of them.
const NAME_RULE = {
  rule: "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$')",
  message:
    'metadata.name must be a DNS label: at most 63 lowercase letters, digits and dashes, ' +
    'starting and ending with a letter or digit',
};

/** buildCrd makes the FederatedJob CustomResourceDefinition from the schemas in federatedjob.ts. */
export function buildCrd(): CustomResourceDefinition {
  const openAPIV3Schema: JsonSchema = {
    type: 'object',
    description:
      'FederatedJob trains one model across sites whose data never leaves them: one trainer ' +
      "pod per site trains locally and sends only model updates to the job's aggregator, " +
      'round by round.',
    required: ['spec'],
    properties: {
      apiVersion: {
        type: 'string',
        description: `The versioned schema of this object: ${GROUP}/${VERSION}.`,
      },
      kind: { type: 'string', description: `The kind of this object: ${KIND}.` },
      // The API server allows nothing but the type here: it owns the metadata schema.
      metadata: { type: 'object' },
      spec: structural(FederatedJobSpecSchema),
      status: structural(FederatedJobStatusSchema),
    },
    'x-kubernetes-validations': [NAME_RULE],
  };

  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: CRD_NAME },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: SINGULAR,
        shortNames: SHORT_NAMES,
        categories: CATEGORIES,
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
            {
              name: 'Round',
              type: 'string',
              jsonPath: '.status.roundProgress',
              description: 'Completed rounds of spec.rounds',
            },
            {
              name: 'Sites',
              type: 'string',
              jsonPath: '.status.sitesReady',
              description: 'Sites with a running trainer, of all sites',
            },
            { name: 'Accuracy', type: 'number', jsonPath: '.status.metrics.accuracy' },
            { name: 'Loss', type: 'number', jsonPath: '.status.metrics.loss' },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}

const HEADER = [
  '# FederatedJob CustomResourceDefinition. Generated from operator/api/federatedjob.ts by',
  '# `make crds` (operator/api/generate-crd.ts); do not edit: a unit test fails on drift.',
].join('\n');

/** renderCrd is the YAML text checked in at every path of CRD_FILES. */
export function renderCrd(): string {
  return `${HEADER}\n${stringify(buildCrd(), { lineWidth: 0 })}`;
}
