# clonejobs service image. Drive images live in /data (a volume); PostgreSQL comes from DATABASE_URL.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATA_DIR=/data
COPY package.json package-lock.json ./
COPY prisma ./prisma
COPY prisma.config.ts ./
RUN npm ci --no-audit --no-fund
COPY . .
VOLUME ["/data"]
EXPOSE 3000
CMD ["npm", "start"]
