import packageJson from "../package.json" with { type: "json" };

/** version is keel's release, from package.json (bundled into the binary at build). */
export const version: string = packageJson.version;
