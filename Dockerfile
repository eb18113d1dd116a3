# clonejobs service image. Build stage: dev dependencies, compiled to dist/. Runtime stage: production
# dependencies only, run by node as an unprivileged user. Drive images live in /data (a volume);
# PostgreSQL comes from DATABASE_URL; migrations run as `node bin/clonejobs.js migrate` (compose
# runs it as a one-shot service before the api).
# Node 20, as package.json `engines` and the README say.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY openapi ./openapi
COPY dashboard ./dashboard
RUN npm run build

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATA_DIR=/data
COPY package.json package-lock.json ./
# no install scripts: the Prisma client is already compiled into dist/, the embedded PostgreSQL is unused
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/dashboard/dist ./dashboard/dist
COPY prisma/migrations ./prisma/migrations
COPY bin ./bin
COPY scripts/ensure-built.mjs ./scripts/
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 3000
CMD ["node", "dist/server.js"]
