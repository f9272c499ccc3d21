// Fails at import: the interface client reports it through /runtime/init/error.
throw new Error("cannot load configuration");
export const handler = async () => "never";
